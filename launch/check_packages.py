#!/usr/bin/python3
"""Every file the build and the tests use from the system comes from a package launch/setup.sh
installs, directly or through the Depends/Pre-Depends of those packages. setup.sh installs with
--no-install-recommends, so a package that is only recommended (ocl-icd-opencl-dev by
libdnnl-dev) is missing on a fresh machine even when this one has it.

  launch/check_packages.py [--build-dir DIR] [--without PKG ...]

What is checked, each resolved to its owner with dpkg -S:
  - the FILEPATH/PATH entries of DIR/CMakeCache.txt under /usr (libraries, headers, *_DIR
    config folders, programs); /usr/local is not Debian's and is left out (the CUDA toolkit);
  - the Python modules imported by the repository's .py files, as /usr/bin/python3 finds them;
  - the programs the scripts and tests run (PROGRAMS below).
The list of packages is the one setup.sh installs (`launch/setup.sh --print-packages`);
--without drops packages from it, to see that a missing one is caught. Essential and
Priority: required packages are on every Debian system and count as present.
Exit 0 and one OK line, or exit 1 naming each missing package and a file that needs it.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"  # the tests' interpreter (Debian's, with python3-torch)
# Programs that launch/, bench/, tests/ and the study run by name.
PROGRAMS = ["mpirun", "ip", "tc", "shellcheck", "clang-format", "timeout", "protoc",
            "grpc_python_plugin", "cmake", "ctest", PYTHON]


def installed_packages():
    """name -> (essential or required, [dependency OR groups], [provided names])."""
    fmt = "${Package}\t${db:Status-Status}\t${Essential}\t${Priority}\t${Depends}\t" \
          "${Pre-Depends}\t${Provides}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f=" + fmt], capture_output=True, text=True,
                         check=True).stdout
    packages, providers = {}, {}
    for line in out.splitlines():
        name, status, essential, priority, depends, pre, provides = line.split("\t")
        if status != "installed":
            continue
        groups = [g.strip() for g in ",".join(x for x in (depends, pre) if x).split(",")]
        packages[name] = (essential == "yes" or priority == "required", [g for g in groups if g])
        for p in provides.split(","):
            p = bare_name(p)
            if p:
                providers.setdefault(p, []).append(name)
    return packages, providers


def bare_name(relation):
    """'libc6 (>= 2.34)' or 'libfoo:any' -> the package name."""
    return re.split(r"[\s(:]", relation.strip(), maxsplit=1)[0]


def closure(roots, packages, providers):
    """The Depends/Pre-Depends closure: of each OR group the first installed alternative, a
    virtual name through the packages that provide it."""
    def resolve(name):
        if name in packages:
            return name
        return next(iter(providers.get(name, [])), None)

    seen, pending = set(), list(roots)
    while pending:
        name = resolve(pending.pop())
        if name is None or name in seen:
            continue
        seen.add(name)
        for group in packages[name][1]:
            for alternative in group.split("|"):
                found = resolve(bare_name(alternative))
                if found:
                    pending.append(found)
                    break
    return seen


def owners(paths):
    """path -> set of owning packages (empty when dpkg knows none), in one dpkg -S call. The
    path as found counts first (libOpenCL.so: the -dev package), then what it links to."""
    def forms(p):
        # Merged /usr: dpkg may have recorded /lib/... for a file found as /usr/lib/...
        for f in (p, os.path.realpath(p)):
            yield f
            if f.startswith("/usr/"):
                yield f[4:]

    queries = sorted({f for p in paths for f in forms(p)})
    out = subprocess.run(["dpkg", "-S", *queries], capture_output=True, text=True).stdout
    by_path = {}
    for line in out.splitlines():
        if line.startswith("diversion "):
            continue
        pkgs, _, path = line.partition(": ")
        by_path.setdefault(path, set()).update(bare_name(p) for p in pkgs.split(","))
    return {p: next((by_path[f] for f in forms(p) if f in by_path), set()) for p in paths}


def cmake_paths(build_dir):
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if not os.path.exists(cache):
        sys.exit(f"check_packages: no {cache}: run launch/setup.sh first")
    found = []
    with open(cache) as f:
        for line in f:
            m = re.match(r"^[A-Za-z0-9_.+-]+:(FILEPATH|PATH)=(/usr/.*)$", line.rstrip("\n"))
            if m and not m.group(2).startswith("/usr/local/") and os.path.exists(m.group(2)):
                found.append(m.group(2))
    return found


def python_modules():
    """Modules the repository's Python files import that are neither the standard library nor
    the repository's own (or generated at test time, like syncbn's gRPC client code)."""
    names, local = set(), {"syncbn"}
    for top in ("tests", "bench", "launch"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for fn in files:
                if not fn.endswith(".py"):
                    continue
                local.add(fn[:-3])
                with open(os.path.join(dirpath, fn)) as f:
                    for line in f:
                        m = re.match(r"^\s*(?:import|from)\s+([A-Za-z_][A-Za-z0-9_]*)", line)
                        if m:
                            names.add(m.group(1))
    script = ("import importlib.util, sys\n"
              "for n in sys.argv[1:]:\n"
              "    if n in sys.stdlib_module_names: continue\n"
              "    s = importlib.util.find_spec(n)\n"
              "    print(n, s.origin if s and s.origin else (list(s.submodule_search_locations)[0]"
              " if s and s.submodule_search_locations else '-'))\n")
    out = subprocess.run([PYTHON, "-c", script, *sorted(names - local)], capture_output=True,
                         text=True, check=True).stdout
    return [tuple(line.split(" ", 1)) for line in out.splitlines()]


def which(program):
    if os.path.isabs(program):
        return program if os.path.exists(program) else None
    for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin"):
        if os.path.exists(os.path.join(d, program)):
            return os.path.join(d, program)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    parser.add_argument("--without", action="append", default=[], metavar="PKG")
    args = parser.parse_args()

    listed = subprocess.run(["bash", os.path.join(ROOT, "launch", "setup.sh"), "--print-packages"],
                            capture_output=True, text=True, check=True).stdout.split()
    if not listed:
        sys.exit("check_packages: launch/setup.sh --print-packages printed no packages")
    packages, providers = installed_packages()
    have = closure([p for p in listed if p not in args.without], packages, providers)
    have |= {name for name, (base, _) in packages.items() if base}

    needs = []  # (what uses it, path)
    needs += [("CMake found", p) for p in cmake_paths(args.build_dir)]
    problems = []
    for module, origin in python_modules():
        if origin == "-":
            problems.append(f"Python module '{module}' is imported but {PYTHON} cannot find it")
        else:
            needs.append((f"Python module '{module}'", origin))
    for program in PROGRAMS:
        path = which(program)
        if path is None:
            problems.append(f"program '{program}' is used but not installed")
        else:
            needs.append((f"program '{program}'", path))

    owned = owners([path for _, path in needs])
    missing = {}
    for what, path in needs:
        pkgs = owned[path]
        if not pkgs:
            continue  # a folder no package owns alone, or a file made at build time
        if not pkgs & have:
            missing.setdefault(" or ".join(sorted(pkgs)), f"{what} {path}")
    for pkg, example in sorted(missing.items()):
        problems.append(f"package {pkg} is not installed by launch/setup.sh (nor a dependency of "
                        f"its packages), but {example} comes from it")
    if problems:
        for p in problems:
            print(f"check_packages: {p}", file=sys.stderr)
        print(f"check_packages: FAIL: {len(problems)} problem(s); add the package(s) to the list "
              "in launch/setup.sh", file=sys.stderr)
        return 1
    print(f"check_packages: OK: {len(needs)} files (CMake cache, Python modules, programs) come "
          f"from the {len(listed)} packages of launch/setup.sh or their dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
