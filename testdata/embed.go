// Package testdata holds the Avro schemas the tests share, embedded so that
// they need no path at run time, and the Go types that match them. It is for
// tests only: programs (profilesvc, the examples) carry schemas of their own.
package testdata

import _ "embed"

// UserV1Schema is the seed guide's com.example.User: first_name, last_name,
// age. UserV1 holds it.
//
//go:embed user.avsc
var UserV1Schema string

// UserV2Schema is UserV1Schema plus an optional email (default null). It can
// read every record written with UserV1Schema. User holds it.
//
//go:embed user-v2.avsc
var UserV2Schema string

// UserV3IncompatibleSchema changes age from int to string: a reader with it
// cannot read records written with UserV2Schema, so registering it must be
// refused.
//
//go:embed user-v3-incompatible.avsc
var UserV3IncompatibleSchema string

// UserNoAgeSchema is UserV2Schema without its required age: a reader with
// it reads every record written with UserV2Schema (BACKWARD), but a reader
// with UserV2Schema cannot read what it writes (not FORWARD). UserNoAge
// holds it.
//
//go:embed user-no-age.avsc
var UserNoAgeSchema string

// User is a value of UserV2Schema. A nil Email is Avro null.
type User struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Age       int32   `avro:"age"`
	Email     *string `avro:"email"`
}

// UserV1 is a value of UserV1Schema: User without email.
type UserV1 struct {
	FirstName string `avro:"first_name"`
	LastName  string `avro:"last_name"`
	Age       int32  `avro:"age"`
}

// UserNoAge is a value of UserNoAgeSchema: User without age.
type UserNoAge struct {
	FirstName string  `avro:"first_name"`
	LastName  string  `avro:"last_name"`
	Email     *string `avro:"email"`
}
