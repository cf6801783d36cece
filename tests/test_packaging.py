"""Packaging: what pyproject, the locks, the README and the installed package promise agree.

- ``import ravine`` and a ``fit`` run in a fresh interpreter where every optional package
  (and tqdm) cannot be imported; features that need one name the extra that brings it;
- every optional package ravine names (ravine.extras) is in that extra of pyproject.toml, and
  the README's extras table lists the same extras;
- the locks pin everything the extras need; the claimed Python and torch versions are the ones
  CI runs; py.typed and the MIT LICENSE ship;
- slow: the wheel installs into a clean venv and runs outside the checkout
  (scripts/check_wheel.py), and the documentation site builds with no warning.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from import_checks import assert_runs_fresh, type_checking_imports
from ravine import extras

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
OPTIONAL = PROJECT["optional-dependencies"]
# Modules import ravine must not need: every extra's, and tqdm (a dependency, imported lazily).
BLOCKED = sorted({*extras.EXTRAS, "tqdm", "pandas", "imageio", "requests"})

BLOCKER = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError
"""

CORE_RUN = """
import torch
import ravine
from ravine.optim import catalog, registry

torch.manual_seed(0)
x = torch.randn(96, 5)
y = (x[:, 0] - x[:, 1] > 0).long()
model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
history = ravine.fit(model, ravine.Adam(model.parameters(), lr=0.02), (x, y), (x, y),
                     batch_size=32, epochs=4, checkpoint_dir="ck")
assert history.val_accuracy[-1] > 0.7, history
for row in catalog.ROWS:
    if row.cls.__module__.startswith("ravine.optim."):  # learned ones need their weights
        registry.create(row.name, [torch.nn.Parameter(torch.zeros(3))])
print("core ok")
"""


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.timeout(300)
def test_import_and_fit_need_only_torch_and_numpy(tmp_path: Path) -> None:
    proc = _run(BLOCKER.format(blocked=BLOCKED) + CORE_RUN, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core ok" in proc.stdout
    assert (tmp_path / "ck" / "checkpoint.pt").is_file()


MISSING = [
    # (what the user does, the module made unimportable, the extra the message must name)
    ("import ravine.viz", "matplotlib", "viz"),
    ("import ravine.viz", "PIL", "viz"),
    ("ravine.data.digits()", "sklearn", "data"),
    ("ravine.data.mnist1d(num_samples=100)", "mnist1d", "data"),
    ("ravine.data.mnist()", "mnist", "data"),
]

# One interpreter for every case (a fresh one each would cost a torch import per case): each
# case forgets what the previous one imported of ravine.viz and of the module it blocks.
MISSING_RUN = """
import json, sys
import ravine
messages = []
for call, module in json.loads(sys.argv[1]):
    for name in [m for m in sys.modules if m.partition(".")[0] == module
                 or m.startswith("ravine.viz")]:
        del sys.modules[name]
    sys.modules[module] = None
    try:
        exec(call)
    except (ImportError, FileNotFoundError) as err:  # DatasetNotFoundError: a FileNotFoundError
        messages.append(f"{type(err).__name__}: {err}")
    else:
        messages.append("no error")
    del sys.modules[module]
print(json.dumps(messages))
"""


@pytest.fixture(scope="module")
def missing_messages(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    cases = json.dumps([[call, module] for call, module, _ in MISSING])
    proc = subprocess.run(
        [sys.executable, "-c", MISSING_RUN, cases],
        cwd=tmp_path_factory.mktemp("missing"),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", range(len(MISSING)), ids=[f"{c}-{m}" for c, m, _ in MISSING])
def test_missing_extra_names_it(missing_messages: list[str], case: int) -> None:
    extra = MISSING[case][2]
    assert f'pip install "ravine[{extra}]"' in missing_messages[case], missing_messages[case]


def test_missing_extra_error_type() -> None:
    err = ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    with pytest.raises(extras.MissingExtraError, match=r"ravine\[viz\]") as info:
        extras.reraise(err, "History.plot")
    assert isinstance(info.value, ModuleNotFoundError) and info.value.name == "matplotlib"
    other = ModuleNotFoundError("No module named 'kiwisolver'", name="kiwisolver")
    with pytest.raises(ModuleNotFoundError) as info:
        extras.reraise(other, "History.plot")
    assert info.value is other  # a package's own broken dependency is not renamed
    with pytest.raises(ValueError, match="module='matplotlb' is not an optional dependency"):
        extras.require("matplotlb", "a typo")


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@pytest.mark.parametrize("module", sorted(extras.EXTRAS))
def test_extras_map_matches_pyproject(module: str) -> None:
    distribution, extra = extras.EXTRAS[module]
    assert extra in OPTIONAL, f"extras.EXTRAS names extra {extra!r}, pyproject has none"
    assert canonicalize_name(Requirement(distribution).name) in _names(OPTIONAL[extra])


def test_core_dependencies_are_torch_numpy_tqdm() -> None:
    assert _names(PROJECT["dependencies"]) == {"torch", "numpy", "tqdm"}


def test_all_extra_is_every_user_extra() -> None:
    (spec,) = OPTIONAL["all"]
    included = set(Requirement(spec).extras)
    assert included == set(OPTIONAL) - {"all", "docs", "dev", "bench"}


def test_readme_lists_every_extra() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| extra | brings | for |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `([a-z]+)`(?:, `([a-z]+)`)? \|", table, re.M)
    shown = {name for row in listed for name in row if name}
    assert shown == set(OPTIONAL) - {"bench"}, shown


def _lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name}: {line} is not pinned"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


@pytest.mark.parametrize(
    ("lock", "python"), [("requirements.lock", "3.11"), ("requirements-py310.lock", "3.10")]
)
def test_lock_pins_what_the_extras_need(lock: str, python: str) -> None:
    pins = _lock(lock)
    env = {"python_version": python, "extra": ""}
    wanted = [*PROJECT["dependencies"]]
    for name in ("viz", "video", "data", "lab", "postgres", "tensorboard", "dev"):
        wanted += OPTIONAL[name]
    if lock == "requirements.lock":
        wanted += OPTIONAL["docs"]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == "torch" or (req.marker and not req.marker.evaluate(env)):
            continue  # torch: pinned in the Makefile (TORCH_SPEC)
        assert name in pins, f"{lock} does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (lock, text, pins[name])


def test_versions_claimed_are_the_versions_tested() -> None:
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH_SPEC \?= torch==(\S+)", makefile, re.M)[1]
    oldest = re.search(r"^PYTHON_OLDEST \?= python(\S+)", makefile, re.M)[1]
    (torch_req,) = [r for r in PROJECT["dependencies"] if r.startswith("torch")]
    assert Requirement(torch_req).specifier == SpecifierSet(f">={torch_pin.rsplit('.', 1)[0]}")
    assert PROJECT["requires-python"] == f">={oldest}"
    claimed = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert claimed == [oldest, "3.11"]  # 3.11: the default Python, requirements.lock's
    readme = (ROOT / "README.md").read_text()
    assert f"Python {oldest} and 3.11 with torch {torch_pin.rsplit('.', 1)[0]}" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test-oldest" in ci and "make test-wheel" in ci and "make docs" in ci


def test_py_typed_and_license_ship() -> None:
    assert (ROOT / "src" / "ravine" / "py.typed").is_file()
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]["ravine"]
    assert "py.typed" in package_data
    assert PROJECT["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_changelog_has_an_entry_for_the_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{PROJECT['version']}]" in changelog


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheel_installs_and_runs_in_a_clean_venv() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_wheel.py")],
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    assert "wheel check passed" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_docs_build_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.fail('mkdocs is not installed: pip install -e ".[docs]" (make setup installs it)')
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=550,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert (tmp_path / "site" / "api" / "ravine.optim.adam" / "index.html").is_file()


def _hooks():
    spec = importlib.util.spec_from_file_location(
        "mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_nav_drops_missing_pages_and_lists_the_rest(tmp_path: Path) -> None:
    # The docs extra: in the default environment (make setup); make test-oldest's venv has none.
    pytest.importorskip("mkdocs", reason='the docs extra is not installed: pip install ".[docs]"')
    hooks = _hooks()
    for page in ("index.md", "mine.md", "new.md", "api/x.md"):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("# page\n")
    nav = [{"Home": "index.md"}, {"Group": [{"Mine": "mine.md"}, {"Later": "later.md"}]},
           {"Not yet": "missing.md"}, {"Link": "https://example.org/x.md"}]  # fmt: skip
    config = hooks.on_config({"docs_dir": str(tmp_path), "nav": nav})
    assert config["nav"][:4] == [
        {"Home": "index.md"},
        {"Group": [{"Mine": "mine.md"}]},
        {"Link": "https://example.org/x.md"},
        {"More": ["new.md"]},  # written but in no nav entry; api/ pages are generated
    ]
    (api,) = config["nav"][4:]
    assert list(api) == ["API reference"]


def test_api_reference_covers_every_public_module() -> None:
    pytest.importorskip("mkdocs", reason='the docs extra is not installed: pip install ".[docs]"')
    modules = _hooks().public_modules()
    assert {"ravine", "ravine.optim", "ravine.optim.adam", "ravine.train"} <= set(modules)
    assert not [m for m in modules if m.startswith("ravine.cli") or "._" in m]
    on_disk = {
        ".".join(p.relative_to(ROOT / "src").with_suffix("").parts)
        for p in (ROOT / "src" / "ravine").rglob("*.py")
        if not p.name.startswith("_") and "cli" not in p.parts
    }
    assert on_disk <= set(modules)


def test_package_names_load_lazily_and_match_the_typed_imports() -> None:
    """`import ravine` loads no torch (the CLI answers and `ravine serve` prints its address at
    once); every public name still resolves, and the run-time table names exactly what the
    imports type checkers read name."""
    import ravine

    typed = {
        # `from ravine import data` is a submodule; the others name an object in a module
        bound: f"ravine.{name}" if module == "ravine" else f"{module}:{name}"
        for module, name, bound in type_checking_imports(ravine.__file__)
    }
    assert typed == ravine._WHERE
    code = (
        "import sys, ravine\n"
        "assert 'torch' not in sys.modules, 'import ravine imported torch'\n"
        "names = {n: getattr(ravine, n) for n in ravine.__all__}\n"
        "assert names['Adam'].__name__ == 'Adam' and names['data'].__name__ == 'ravine.data'\n"
        "from ravine import *\n"
        "assert fit is ravine.fit and set(ravine.__all__) <= set(dir(ravine))\n"
        "assert ravine.optim.registry.create is ravine.create\n"
        "import ravine.gradcheck\n"
        "assert callable(ravine.gradcheck) and ravine.gradcheck.__name__ == 'gradcheck'\n"
        "assert ravine.train.fit is fit and ravine.bench.__name__ == 'ravine.bench'\n"
        "try:\n"
        "    ravine.not_a_name\n"
        "except AttributeError as err:\n"
        "    assert 'not_a_name' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    assert_runs_fresh(code)


def test_every_module_imports_first() -> None:
    """Each ravine module imports in a fresh module table: with `import ravine` lazy, the first
    import can be any module (`ravine meta-train` starts at ravine.learned), so an import cycle
    that an earlier eager import of ravine.optim hid shows here. One interpreter keeps torch and
    forgets ravine's modules between imports."""
    code = (
        "import importlib, pathlib, sys, traceback\n"
        "root = pathlib.Path(sys.argv[1])\n"
        "names = sorted('.'.join(p.relative_to(root).with_suffix('').parts)\n"
        "               for p in (root / 'ravine').rglob('*.py'))\n"
        "names = [n.removesuffix('.__init__') for n in names if not n.endswith('__main__')]\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'ravine' or m.startswith('ravine.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as err:\n"
        "        if (err.name or 'ravine').startswith('ravine'):\n"
        "            failed.append(f'{name}: {err!r}')\n"  # a missing extra is not a cycle
        "    except Exception:\n"
        "        failed.append(f'{name}: {traceback.format_exc(limit=-3)}')\n"
        "print(len(names), 'modules')\n"
        "assert not failed, '\\n'.join(failed)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "src")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert int(done.stdout.split()[0]) > 80  # every module was tried
