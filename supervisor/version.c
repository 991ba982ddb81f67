/*
 * This binary's version and the upgrade-state format it writes and reads
 * (supervisor/upgrade.h). A translation unit of its own, linked into moltd
 * directly rather than through the supervisor library, so that the tests can
 * build real moltd binaries that differ only here (a newer version, an
 * incompatible format: tests/integration/CMakeLists.txt).
 */
#include "supervisor/upgrade.h"

#ifndef MOLT_VERSION_EXTRA
#define MOLT_VERSION_EXTRA ""
#endif
/* Format 1: molt 0.1. Bump it with any change to what upgrade.c and the
 * modules' *_upgrade_pack() write or to what a field means. */
#ifndef MOLT_UPGRADE_FORMAT
#define MOLT_UPGRADE_FORMAT 1
#endif

const char sup_version[] = MOLT_VERSION MOLT_VERSION_EXTRA;
const unsigned sup_upgrade_format = MOLT_UPGRADE_FORMAT;

/* A test build (moltd_upgrade_faulty) whose restore after a real exec fails on
 * purpose, while its check passes: the fallback to the old binary is tested
 * with a real exec both ways. 0 in every other build. */
#ifndef MOLT_UPGRADE_TEST_FAIL_RESTORE
#define MOLT_UPGRADE_TEST_FAIL_RESTORE 0
#endif
const bool sup_upgrade_fail_restore = MOLT_UPGRADE_TEST_FAIL_RESTORE;
