// Package config loads and validates Loom's configuration.
//
// The configuration lives in one HCL file (loom.hcl by default), read through
// koanf with its HCL v1 parser. On top of the file, every scalar setting of the
// fixed schema can be overridden from the environment (LOOM_ followed by the
// setting's path in upper case, dots and underscores as "_"; see EnvVars), and
// secrets come only from the environment: LOOM_MASTER_KEY, LOOM_ADMIN_TOKEN and
// the variables a provider's env block names.
//
// Load never stops at the first mistake: it returns an *Errors listing every
// problem it found, each naming the file (or environment variable) and the
// setting's path, so an operator can fix a config in one pass.
package config
