#!/usr/bin/python3
"""launch/check_packages.py catches a package that launch/setup.sh forgets.

  check_packages_test.py BUILD_DIR

With setup.sh's list it passes; with packages planted out of the list it fails (exit 1), naming
each one and a file that needs it: ocl-icd-opencl-dev (libOpenCL.so, found by the CMake
configure through Debian's dnnl-config.cmake: the omission that once broke fresh machines),
python3-grpcio (the tests' `import grpc`) and iproute2 (the cluster scripts' `ip`).
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "launch", "check_packages.py")


def main():
    build_dir = sys.argv[1]
    ok = subprocess.run([CHECK, "--build-dir", build_dir], capture_output=True, text=True)
    if ok.returncode != 0 or "check_packages: OK" not in ok.stdout:
        sys.exit(f"FAIL: the check does not pass with setup.sh's list:\n{ok.stdout}{ok.stderr}")
    planted = {"ocl-icd-opencl-dev": "libOpenCL.so", "python3-grpcio": "Python module 'grpc'",
               "iproute2": "program 'ip'"}
    cmd = [CHECK, "--build-dir", build_dir]
    for pkg in planted:
        cmd += ["--without", pkg]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    if bad.returncode != 1:
        sys.exit(f"FAIL: exit {bad.returncode} with packages left out, expected 1:\n{bad.stderr}")
    for pkg, needed_by in planted.items():
        line = next((l for l in bad.stderr.splitlines() if f"package {pkg} is not" in l), "")
        if needed_by not in line:
            sys.exit(f"FAIL: no line names {pkg} and {needed_by!r}:\n{bad.stderr}")
    print("ok: the check passes, and fails naming each planted omission")


if __name__ == "__main__":
    main()
