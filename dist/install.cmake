# Installs the systemd units of dist/, the example config dist/molt.json and
# the man pages of man/, with the paths in them made those of this install.
#
# Run by `cmake --install` (install(CODE) in CMakeLists.txt sets the MOLT_DIST_*
# variables and includes this file), not at configure time: CMAKE_INSTALL_PREFIX
# is then the prefix the files actually go to, also when
# `cmake --install BUILD --prefix DIR` overrides the configured one. DESTDIR is
# honoured by file(INSTALL), as for every other install() rule.
#
# The files in the repository stay plain, usable files written for prefix /usr:
# /usr/sbin/moltd, /etc/molt/molt.json, /usr/lib/molt/plugins, ... Each such
# path (the table below) is replaced by this install's; everything else is
# copied as it is.

# An install directory as an absolute path: `rel` as install() uses it (below
# the prefix unless absolute), and for kind "etc" GNUInstallDirs' rule for
# CMAKE_INSTALL_FULL_SYSCONFDIR (prefix / or /usr: /etc; /opt/X: /etc/opt/X).
function(molt_dist_dir out rel kind)
    string(REGEX REPLACE "/+$" "" prefix "${CMAKE_INSTALL_PREFIX}")
    if(IS_ABSOLUTE "${rel}")
        set(dir "${rel}")
    elseif(kind STREQUAL "etc" AND prefix MATCHES "^(/usr)?$")
        set(dir "/${rel}")
    elseif(kind STREQUAL "etc" AND prefix MATCHES "^/opt/" AND NOT prefix MATCHES "^/opt/homebrew/")
        set(dir "/${rel}${prefix}")
    else()
        set(dir "${prefix}/${rel}")
    endif()
    set(${out} "${dir}" PARENT_SCOPE)
endfunction()

molt_dist_dir(sbindir "${MOLT_DIST_SBINDIR}" "")
molt_dist_dir(sysconfdir "${MOLT_DIST_SYSCONFDIR}" etc)
molt_dist_dir(libdir "${MOLT_DIST_LIBDIR}" "")
molt_dist_dir(docdir "${MOLT_DIST_DOCDIR}" "")
molt_dist_dir(mandir "${MOLT_DIST_MANDIR}" "")
molt_dist_dir(unitdir "${MOLT_DIST_UNITDIR}" "")

# The repository's path, and what it becomes. The order does not matter: each
# is first replaced by a placeholder, then the placeholders by the new paths,
# so that a new path is never rewritten again.
set(molt_dist_from /usr/sbin/ /etc/molt/ /usr/lib/molt/plugins /usr/lib/systemd/system /usr/share/doc/molt)
set(molt_dist_to "${sbindir}/" "${sysconfdir}/molt/" "${libdir}/molt/plugins" "${unitdir}" "${docdir}")

# Copies `src` (relative to the source tree) to `destdir` as `name`, with the
# paths replaced. roff: in a new path, '-' is written \- (a man page's paths
# must render as the ASCII hyphen-minus that the shell needs, and are never
# hyphenated), and each '/' is followed by \: (a place where the line may
# break, for a long prefix that would not fit a line otherwise).
function(molt_dist_install src destdir name roff)
    file(READ "${MOLT_DIST_SOURCE_DIR}/${src}" text)
    list(LENGTH molt_dist_from n)
    math(EXPR last "${n} - 1")
    foreach(i RANGE ${last})
        list(GET molt_dist_from ${i} from)
        string(REPLACE "${from}" "@@molt-dist-${i}@@" text "${text}")
    endforeach()
    foreach(i RANGE ${last})
        list(GET molt_dist_to ${i} to)
        if(roff)
            string(REPLACE "-" "\\-" to "${to}")
            string(REPLACE "/" "/\\:" to "${to}")
        endif()
        string(REPLACE "@@molt-dist-${i}@@" "${to}" text "${text}")
    endforeach()
    file(WRITE "${tmp}/${name}" "${text}")
    file(INSTALL DESTINATION "${destdir}" TYPE FILE FILES "${tmp}/${name}")
endfunction()

# Written next to the build for file(INSTALL) to copy, under a name of this
# run's own, and removed again: an install as root leaves nothing behind in
# the build tree that a later install as another user could not overwrite.
string(RANDOM LENGTH 12 tmp)
set(tmp "${MOLT_DIST_TMP}-${tmp}")
file(MAKE_DIRECTORY "${tmp}")

foreach(unit molt.service molt.socket molt-notify-reload.service)
    molt_dist_install(dist/${unit} "${unitdir}" ${unit} FALSE)
endforeach()
molt_dist_install(dist/molt.json "${docdir}/examples" molt.json FALSE)
foreach(page moltd.8 moltctl.8)
    molt_dist_install(man/${page} "${mandir}/man8" ${page} TRUE)
endforeach()

file(REMOVE_RECURSE "${tmp}")
