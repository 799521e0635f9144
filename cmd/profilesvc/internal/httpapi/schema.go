package httpapi

import _ "embed"

// UserSchema is the Avro schema of User (com.example.User with an optional
// email): the value schema of the profiles topic. It is the same text as the
// repository's testdata/user-v2.avsc (a test says so), which the library's
// tests write records with, so that they and the service agree on the
// topic's records; the binary carries its own copy.
//
//go:embed user.avsc
var UserSchema string
