// Package testutil holds govmm's test helpers: named requirement checks
// that skip a test when this host lacks something (and fail it instead when
// the environment says the requirement is mandatory, as CI does), a
// file-descriptor leak check, network namespaces for TAP tests (with a way
// to run Go code inside one), the ABI check that compares a package's
// numbers with the C headers, the builds of the test kernels, and polling
// for a condition. Nothing else belongs here.
package testutil
