#!/usr/bin/env python3
"""The symbol boundaries of librefit and of the plugins, read with nm -D.

  check_symbols.py exports NM LIBREFIT ARCHITECTURE_MD PUBLIC_INCLUDE_DIR
      librefit.so exports exactly the functions docs/architecture.md lists
      (between the exported-symbols markers), and those are exactly the
      functions the public headers declare.
  check_symbols.py plugins NM PLUGIN.so...
      every plugin exports exactly refit_plugin_entry and leaves no refit_*
      symbol for the dynamic linker to resolve (a plugin never links
      librefit: everything it gets from the core comes through the host
      table).

Exit 0: pass, 1: fail (what differs, by name), 77: skipped (no nm).
"""

import os
import re
import subprocess
import sys

SKIP = 77
# Symbols the linker itself may define in a shared object.
LINKER_DEFINED = {"_init", "_fini", "_edata", "_end", "__bss_start"}


def dynsyms(nm, path, undefined):
    """The dynamic symbols of path, defined or undefined, without versions."""
    flag = "--undefined-only" if undefined else "--defined-only"
    out = subprocess.run([nm, "-D", flag, path], check=True, capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        f = line.split()
        if not f:
            continue
        kind, name = (f[-2], f[-1]) if len(f) >= 2 else ("", f[-1])
        if kind == "A":  # version nodes
            continue
        name = name.split("@")[0]
        if name and name not in LINKER_DEFINED:
            names.add(name)
    return names


def documented(md_path):
    """The names between <!-- exported-symbols:begin --> and :end."""
    text = open(md_path, encoding="utf-8").read()
    m = re.search(r"<!-- exported-symbols:begin -->(.*?)<!-- exported-symbols:end -->", text, re.S)
    if not m:
        raise SystemExit("%s: no <!-- exported-symbols:begin/end --> block" % md_path)
    return set(re.findall(r"\brefit_\w+", m.group(1)))


def declared(include_dir):
    """The functions declared in the public headers (not function-pointer
    members or typedefs: those are the plugin ABI, not librefit's)."""
    names = set()
    for root, _, files in os.walk(include_dir):
        for fn in files:
            if not fn.endswith(".h"):
                continue
            src = open(os.path.join(root, fn), encoding="utf-8").read()
            src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
            src = re.sub(r"^\s*#.*$", "", src, flags=re.M)
            names.update(re.findall(r"(?<!\(\*)(?<![\w(])(refit_\w+)\s*\(", src))
    return names


def diff(what, a_name, a, b_name, b):
    bad = False
    for n in sorted(a - b):
        print("%s: %s is in %s but not in %s" % (what, n, a_name, b_name))
        bad = True
    for n in sorted(b - a):
        print("%s: %s is in %s but not in %s" % (what, n, b_name, a_name))
        bad = True
    return bad


def check_exports(nm, lib, md, inc):
    exported = dynsyms(nm, lib, False)
    docs = documented(md)
    decl = declared(inc)
    bad = diff("librefit", "the exports of " + lib, exported, "the list in " + md, docs)
    bad |= diff("public API", "the public headers " + inc, decl, "the list in " + md, docs)
    if not bad:
        print("librefit exports the %d documented functions of the public headers" % len(exported))
    return 1 if bad else 0


def check_plugins(nm, plugins):
    bad = False
    for p in plugins:
        exported = dynsyms(nm, p, False)
        if exported != {"refit_plugin_entry"}:
            print("%s exports %s; a plugin exports exactly refit_plugin_entry"
                  % (p, " ".join(sorted(exported)) or "nothing"))
            bad = True
        from_core = sorted(n for n in dynsyms(nm, p, True) if n.startswith("refit_"))
        if from_core:
            print("%s resolves %s at load time; plugins reach the core only through the host table"
                  % (p, " ".join(from_core)))
            bad = True
    if not bad:
        print("%d plugins export only refit_plugin_entry and import no refit_* symbol" % len(plugins))
    return 1 if bad else 0


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    mode, nm = argv[1], argv[2]
    if not nm or nm == "-":
        print("no nm: skipped")
        return SKIP
    if mode == "exports" and len(argv) == 6:
        return check_exports(nm, argv[3], argv[4], argv[5])
    if mode == "plugins" and len(argv) >= 4:
        return check_plugins(nm, argv[3:])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
