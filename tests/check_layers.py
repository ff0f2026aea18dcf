#!/usr/bin/env python3
"""check_layers.py — every quoted #include must follow DESIGN.md §2's arrows.

    server  ->  batching  ->  models  ->  runtime  ->  kernels
       └───────────┴────────────┴───────────┴────────────┴──> include/sluice/ (public contract)
    bindings -> include/ only

CMake gives each layer only the include directories it may use, but a quoted include is first looked up
beside the file that includes it, so `#include "../models/gguf.h"` from batching/ would still compile, and
since everything meets at the final link, nothing else would notice. This script resolves each quoted
include the way the compiler does (the includer's own folder, then the layer's include directories) and
reports every one that lands in a folder the layer may not see, as file:line, exiting 1.

Angle-bracket includes are system and third-party headers (libuv, llhttp, jansson, yaml, cblas, CUDA); a
project header reached that way would not compile, since the layer lacks its directory.

Usage: check_layers.py [ROOT] [--no-self-test]
ROOT defaults to the repository this script lives in. Before checking ROOT the script checks itself on a
small made-up tree with known violations (milliseconds), so a broken checker cannot pass silently.
"""
import os
import re
import sys
import tempfile

# The folders of each layer that its own code and its users see as include directories (CMakeLists.txt).
SEARCH_DIRS = {
    "include": ["include"],
    "kernels": ["kernels", "kernels/cpu", "kernels/cuda"],
    "runtime": ["runtime"],
    "models": ["models"],
    "batching": ["batching"],
    "server": ["server"],
    "bindings": ["bindings"],
}

# What each layer may include: whole layers, or single files ("models/model.h" is the one face of
# models/ that batching/ sees).
ALLOWED = {
    "include": ["include"],
    "kernels": ["kernels", "include"],
    "runtime": ["runtime", "kernels", "include"],
    "models": ["models", "runtime", "kernels", "include"],
    "batching": ["batching", "runtime", "include", "models/model.h"],
    "server": ["server", "include"],
    "bindings": ["bindings", "include"],
}

SOURCE_EXTS = (".c", ".h", ".cu", ".cuh", ".cc", ".cpp", ".hpp", ".inc")
INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"\n]+)"', re.M)


def strip_comments(text):
    """Blanks out /* */ and // comments (and leaves string literals alone), keeping every newline so line
    numbers stay right; a commented-out include is not an include."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def layer_of(rel):
    """The layer a repository-relative path belongs to, or None (tests/, benchmarks/, elsewhere)."""
    top = rel.split("/", 1)[0]
    return top if top in SEARCH_DIRS else None


def allowed(layer, target_rel):
    for a in ALLOWED[layer]:
        if target_rel == a or target_rel.startswith(a + "/"):
            return True
    return False


def resolve(root, includer_rel, name, dirs):
    """The first existing file for `#include "name"`: beside the includer, then in dirs (relative to
    root). Returns a normalized repository-relative path, or None (a header outside the tree)."""
    candidates = [os.path.join(os.path.dirname(includer_rel), name)] + [os.path.join(d, name) for d in dirs]
    for cand in candidates:
        full = os.path.normpath(os.path.join(root, cand))
        if os.path.isfile(full):
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            return rel
    return None


def check(root):
    """Returns (violations, n_files, n_includes); each violation is a printable 'file:line: ...' line."""
    violations, n_files, n_includes = [], 0, 0
    for layer in SEARCH_DIRS:
        top = os.path.join(root, layer)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.endswith(SOURCE_EXTS):
                    continue
                path = os.path.join(dirpath, fn)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        text = strip_comments(f.read())
                except OSError as e:
                    violations.append(f"{rel}: cannot read: {e}")
                    continue
                n_files += 1
                for m in INCLUDE_RE.finditer(text):
                    n_includes += 1
                    name = m.group(1)
                    line = text.count("\n", 0, m.start()) + 1
                    ok_dirs = [d for a in ALLOWED[layer] if a in SEARCH_DIRS for d in SEARCH_DIRS[a]]
                    target = resolve(root, rel, name, ok_dirs)
                    if target is None or not allowed(layer, target):
                        # Not found where the layer may look (or found beside it, through "../"): does it
                        # resolve anywhere in the project? Then the layer is reaching where it must not.
                        if target is None:
                            all_dirs = [d for ds in SEARCH_DIRS.values() for d in ds]
                            target = resolve(root, rel, name, all_dirs)
                        if target is not None and layer_of(target) and not allowed(layer, target):
                            may = ", ".join(a if "." in a else a + "/" for a in ALLOWED[layer])
                            violations.append(f'{rel}:{line}: #include "{name}" resolves to {target}, but '
                                              f"{layer}/ may include only {may}")
    return violations, n_files, n_includes


def self_test():
    """Checks a made-up tree with one allowed and one forbidden include per rule; returns problems."""
    files = {
        "include/sluice/sluice.h": "",
        "include/sluice/bad.h": '#include "../../runtime/sl_util.h"\n',                 # forbidden
        "kernels/kdtype.h": '#include "sluice/sluice.h"\n',
        "kernels/cpu/kcpu.h": '#include "kdtype.h"\n#include "sl_util.h"\n',            # 2: forbidden
        "runtime/sl_util.h": '#include "kcpu.h"\n#include "sluice/sluice.h"\n',
        "runtime/config.c": '/* #include "gguf.h" */\n// #include "gguf.h"\n#include "gguf.h"\n',  # 3
        "models/model.h": '#include "sl_util.h"\n#include "kdtype.h"\n',
        "models/gguf.h": "",
        "batching/sched.c": '#include "model.h"\n#include "sl_util.h"\n#include "gguf.h"\n'
                            '#include "../models/gguf.h"\n#include "kcpu.h"\n#include "yaml.h"\n',  # 3, 4, 5
        "server/http.c": '#include "sluice/sluice.h"\n#include "config.h"\n#include <uv.h>\n'
                         '  #  include "sched.c"\n',                                      # 4 (2: no such file)
        "runtime/config.h": "",
    }
    want = {
        ("include/sluice/bad.h", 1), ("kernels/cpu/kcpu.h", 2), ("runtime/config.c", 3),
        ("batching/sched.c", 3), ("batching/sched.c", 4), ("batching/sched.c", 5),
        ("server/http.c", 2), ("server/http.c", 4),
    }
    with tempfile.TemporaryDirectory(prefix="sluice-layers-") as root:
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w") as f:
                f.write(text)
        violations, _, _ = check(root)
    got = set()
    for v in violations:
        m = re.match(r"([^:]+):(\d+): ", v)
        if m:
            got.add((m.group(1), int(m.group(2))))
    problems = [f"self-test: missed {f}:{l}" for f, l in sorted(want - got)]
    problems += [f"self-test: wrongly flagged {f}:{l}" for f, l in sorted(got - want)]
    return problems


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    root = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if "--no-self-test" not in argv:
        problems = self_test()
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print("check_layers: the checker itself is broken", file=sys.stderr)
            return 2
    violations, n_files, n_includes = check(root)
    for v in violations:
        print(v)
    if violations:
        print(f"check_layers: {len(violations)} include(s) break DESIGN.md §2's layering", file=sys.stderr)
        return 1
    print(f"check_layers: {n_files} files, {n_includes} quoted includes, all follow DESIGN.md §2")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
