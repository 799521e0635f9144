// Package testdata holds the Avro schemas and fixtures that tests, examples
// and profilesvc share, embedded so that they need no path at run time.
package testdata

import _ "embed"

// UserV1 is the seed guide's com.example.User: first_name, last_name, age.
//
//go:embed user.avsc
var UserV1 string

// UserV2 is UserV1 plus an optional email (default null). It can read every
// record written with UserV1.
//
//go:embed user-v2.avsc
var UserV2 string

// UserV3Incompatible changes age from int to string: a reader with it cannot
// read records written with UserV2, so registering it must be refused.
//
//go:embed user-v3-incompatible.avsc
var UserV3Incompatible string
