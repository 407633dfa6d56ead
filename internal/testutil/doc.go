// Package testutil holds govmm's test helpers: named requirement checks
// that skip a test when this host lacks something (and fail it instead when
// the environment says the requirement is mandatory, as CI does), and a
// file-descriptor leak check. Nothing else belongs here.
package testutil
