// Package config reads wsgate's configuration file (-config FILE, TOML) and merges it with the
// command line.
//
// Every command-line flag has a top-level key, its name with '-' written '_' (header_timeout =
// "10s"). The package knows no flag by name except route and backend: Load applies each
// top-level key to the *flag.FlagSet the command defined, with fs.Set, for every flag not given
// on the command line (the command line wins), converting the TOML value by the flag's type
// (flag.Getter), so a flag added later needs no change here. Routes are [[route]] tables (or
// -route strings in a route array) and become []route.Spec.
//
// The file is decoded strictly: unknown keys, wrong types, duplicate keys and duplicate routes
// are errors that name the file and line, and Load returns all of them at once.
//
// Library: github.com/pelletier/go-toml/v2. Both candidates were tried on the same broken files:
// BurntSushi/toml reports a line for syntax and type errors but returns unknown keys through
// MetaData.Undecoded() without any position; go-toml/v2 reports row:column for syntax errors,
// duplicate keys and table redefinitions (DecodeError.Position), and its unstable.Parser gives
// the position of every key, which lets this package put a file:line on the errors it finds
// itself (unknown keys, wrong types for a flag, bad routes) and report all of them, not only the
// first. The unstable package is pinned by go.mod like the rest of the module.
package config
