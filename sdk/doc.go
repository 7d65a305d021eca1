// Package sdk is the root of Loom's public plugin SDK, a Go module of its own
// so third-party provider plugins can depend on it without Loom's core
// dependencies (database drivers, HTTP router).
package sdk
