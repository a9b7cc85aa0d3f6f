"""The docs cannot rot: README.md and docs/*.md are read as data and checked against the code.

What is checked, and how a doc marks its blocks (the info string after the opening fence):

- Every ``edge-distill ...`` command line -- in ```bash blocks and in inline code spans, and the part after
  ``-m edge_distill`` of a ``torchrun`` / ``python`` line -- is parsed by the real CLI parser (``cli._build_parser``),
  so a renamed flag, a bad choice or a non-number where a number belongs fails with the file and line.  ``build``
  lines are then turned into ``BuildOptions`` (its own validation: option combinations, ``--teacher-input`` syntax,
  ``--image-size``, device runtimes), and the names that only a registry knows (profiles, datasets, student families,
  KD losses, runners) are looked up.  A trailing ``...`` stands for "more flags" and is dropped.
- Every ``--flag`` in the text (prose and inline code) is a flag of some ``edge-distill`` command, unless the code
  span or code line it sits in is another program's (``pip ...``, ``torchrun ...``, ``python benchmarks/...``);
  the few flags of other tools that prose names bare are listed in ``FOREIGN_FLAGS``.
- ```python blocks run in the default suite, one namespace per file in order (a later block may use an earlier
  one's names), in a temporary directory.  ```python slow marks a block that runs a full build: it runs with
  ``-m slow`` only, with the file's other blocks, in their order.
- ```bash run blocks are executed line by line through the real entry point (``python -m edge_distill``) in the
  default suite and must exit 0: keep them cheap (``--help``, ``profiles list``).  ```bash run slow blocks (a
  demo build and the commands that read its run directory) run with ``-m slow``.  Each block runs in a temporary
  directory of its own.
- Relative links resolve (file and ``#anchor``), every docs/*.md page is linked from README.md, README.md stays
  within ``README_MAX_LINES``.
- The dependency pins the docs promise (docs/dependencies.md): every direct requirement in pyproject.toml is an
  exact pin of the version installed here, and tests/constraints.txt holds the installed version of every package
  in edge-distill's dependency closure.

The options and subcommands are read from the code at test time, never from a list kept here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from edge_distill import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 200
CONSTRAINTS = ROOT / "tests" / "constraints.txt"
# Flags of other programs that the prose names outside any command line (the benchmark suites' `--quick`); anything
# else that looks like a flag, outside another program's command line, must be edge-distill's.
FOREIGN_FLAGS = {"--quick"}
CHAINS = {"&&", "||", ";", "|"}


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    tags: tuple[str, ...]
    lines: tuple[tuple[int, str], ...]  # (1-based line number, text)

    @property
    def where(self) -> str:
        return f"{_rel(self.path)}:{self.line}"


def split_doc(path: Path) -> tuple[list[Block], str]:
    """The fenced blocks of a markdown file, and its text with every fenced line blanked (line numbers kept)."""
    blocks, prose, current, indent = [], [], None, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.lstrip()
        if current is None and stripped.startswith("```"):
            words = stripped[3:].split()
            current = (number, words[0] if words else "", tuple(words[1:]), [])
            indent = len(line) - len(stripped)  # a block inside a list item is indented; its lines lose that indent
            prose.append("")
        elif current is not None and stripped.startswith("```"):
            blocks.append(Block(path, current[0], current[1], current[2], tuple(current[3])))
            current = None
            prose.append("")
        elif current is not None:
            current[3].append((number, line[indent:] if not line[:indent].strip() else line.lstrip()))
            prose.append("")
        else:
            prose.append(line)
    assert current is None, f"{_rel(path)}:{current[0]}: a code fence is never closed"
    return blocks, "\n".join(prose)


def shell_lines(block: Block):
    """(line number, text) of each shell command in a bash block, backslash continuations joined."""
    pending, start = "", 0
    for number, text in block.lines:
        if not pending:
            start = number
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        yield start, pending + text
        pending = ""
    if pending:
        yield start, pending


def inline_spans(prose: str):
    """(line number, text) of each inline code span; a span may wrap over lines."""
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        yield prose.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())


def commands(text: str) -> list[list[str]]:
    """The edge-distill argument lists in one shell line ([] when none): ``edge-distill ...``, ``.venv/bin/edge-distill``,
    or the rest of a line after ``-m edge_distill`` (torchrun, python)."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: not a command line (or a broken one, which the caller reports)
        return [["<unparsable>", text]] if "edge-distill" in text.split()[:1] else []
    found, part = [], []
    for token in [*tokens, ";"]:
        if token not in CHAINS:
            part.append(token)
            continue
        argv = None
        if part and (part[0] == "edge-distill" or part[0].endswith("/edge-distill")):
            argv = part[1:]
        elif "edge_distill" in part and part.index("edge_distill") > 0 and part[part.index("edge_distill") - 1] == "-m":
            argv = part[part.index("edge_distill") + 1:]
        if argv:  # a bare `edge-distill` names the program; it is not a command line
            found.append(argv[:-1] if argv[-1] == "..." else argv)
        part = []
    return found


def all_commands():
    """(where, argv) of every edge-distill command in the docs."""
    for path in doc_files():
        blocks, prose = split_doc(path)
        rel = path.relative_to(ROOT)
        for block in blocks:
            if block.lang in ("bash", "sh", "shell", "console"):
                for number, text in shell_lines(block):
                    for argv in commands(text):
                        yield f"{rel}:{number}", argv
        for number, span in inline_spans(prose):
            for argv in commands(span):
                yield f"{rel}:{number}", argv


def _parser() -> argparse.ArgumentParser:
    # the CLI's own parser, as `edge-distill` builds it (tests/test_layout.py reads the same one)
    make = getattr(cli, "build_parser", None) or cli._build_parser
    return make()


def _subparsers(parser: argparse.ArgumentParser):
    """Every parser of the command tree, the top one included."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                yield from _subparsers(sub)


def known_flags() -> set[str]:
    return {s for p in _subparsers(_parser()) for a in p._actions for s in a.option_strings if s.startswith("--")}


def check_command(argv: list[str], workdir: Path) -> str | None:
    """Why ``edge-distill argv`` is wrong, or None."""
    if argv[:1] == ["<unparsable>"]:
        return f"cannot be split into words: {argv[1]!r}"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a bad line; --help / --version exit 0
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return _check_values(args, workdir)


def _check_values(args: argparse.Namespace, workdir: Path) -> str | None:
    from edge_distill.bench.runners import RUNNERS
    from edge_distill.errors import EdgeDistillError
    from edge_distill.options import BuildOptions, option_fields

    if args.command == "profiles" and args.profiles_command == "show":
        return _check_profile(args.name)
    if args.command == "bench":
        return _check_runner(args.runner, RUNNERS)
    if args.command != "build":
        return None
    fields = {f.name: getattr(args, f.name) for f in option_fields()}
    if fields.get("unlabelled") and not Path(fields["unlabelled"]).is_absolute():
        # BuildOptions looks for the transfer set on disk; a doc's example path is a placeholder, so give it one
        (workdir / fields["unlabelled"]).parent.mkdir(parents=True, exist_ok=True)
        (workdir / fields["unlabelled"]).touch()
    try:
        with contextlib.chdir(workdir):
            options = BuildOptions(**fields)
    except EdgeDistillError as exc:
        return exc.message
    return _check_profile(options.profile) or _check_runner(options.runner, RUNNERS) or _check_registry_names(options)


def _check_profile(name: str) -> str | None:
    from edge_distill.profiles import builtin_names

    if "/" in name or name.endswith(".toml") or name in builtin_names():
        return None
    return f"no built-in profile {name!r} (built-in: {', '.join(builtin_names())})"


def _check_runner(spec: str, runners) -> str | None:
    name = spec.split("://", 1)[0]
    return None if name in runners.names() else f"no runner {spec!r} (runners: {', '.join(runners.names())})"


def _check_registry_names(options) -> str | None:
    from edge_distill.data.builtin import DATASETS
    from edge_distill.data.text import TEXT_DATASETS
    from edge_distill.distill.losses import LOSSES
    from edge_distill.models.students import STUDENT_FAMILIES

    if options.kd_loss not in LOSSES:
        return f"no KD loss {options.kd_loss!r} (losses: {', '.join(LOSSES.names())})"
    if options.student != "auto" and options.student not in STUDENT_FAMILIES:
        return f"no student family {options.student!r} (families: {', '.join(STUDENT_FAMILIES.names())})"
    looks_like_path = "/" in options.data or Path(options.data).suffix
    if not looks_like_path and options.data not in DATASETS and options.data not in TEXT_DATASETS:
        return f"no built-in dataset {options.data!r} (datasets: {', '.join([*DATASETS.names(), *TEXT_DATASETS.names()])})"
    return None


# ---------------------------------------------------------------------------------------------------- commands


def test_the_docs_hold_commands_to_check():
    """The extraction itself: if it found nothing, every check below would pass on an empty list."""
    found = list(all_commands())
    assert len(found) >= 20, found
    assert any(argv[:1] == ["build"] for _, argv in found) and any(argv[:2] == ["profiles", "list"] for _, argv in found)


def test_every_command_line_parses_with_the_real_cli(tmp_path):
    wrong = [f"{where}: edge-distill {shlex.join(argv)}\n    -> {why}" for where, argv in all_commands()
             if (why := check_command(argv, tmp_path))]
    assert not wrong, "stale commands in the docs:\n" + "\n".join(wrong)


def test_the_checker_fails_on_a_stale_flag_a_bad_choice_and_a_bad_combination(tmp_path):
    # the checker's own failure modes, so a checker that accepts everything cannot pass unnoticed
    assert "unrecognized arguments" in check_command(["build", "--no-such-flag"], tmp_path)
    assert "invalid choice" in check_command(["build", "--search", "random"], tmp_path)
    assert check_command(["build", "--teacher-input", "unit"], tmp_path)  # a contract without a teacher file
    assert "KD loss" in check_command(["build", "--kd-loss", "nope"], tmp_path)
    assert "profile" in check_command(["profiles", "show", "no-such-board"], tmp_path)
    assert check_command(["build", "--profile", "rpi4", "--data", "./photos", "--image-size", "48x32"], tmp_path) is None
    assert commands("torchrun --nnodes 2 -m edge_distill build --profile rpi4 ...") == [["build", "--profile", "rpi4"]]
    assert commands("make demo && edge-distill profiles list  # a comment") == [["profiles", "list"]]


def unknown_flags(path: Path, known: set[str]) -> list[str]:
    """``file:line: --flag`` for each flag in a markdown file that is not in ``known``."""
    blocks, prose = split_doc(path)
    masked, unknown = list(prose), []
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        span, number = " ".join(m.group(1).split()), prose.count("\n", 0, m.start()) + 1
        argvs = commands(span)
        # In a command span only the edge-distill part is ours (torchrun's flags are torchrun's); another program's
        # span is that program's business; a bare span such as `--teacher-views K` is scanned with the prose.
        unknown += [f"{_rel(path)}:{number}: {t}" for argv in argvs for t in _flags(argv) if t not in known]
        if argvs or _is_foreign(span):
            masked[m.start():m.end()] = [c if c == "\n" else " " for c in m.group(0)]
    masked = "".join(masked)
    unknown += [f"{_rel(path)}:{masked.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                for m in re.finditer(r"(?<![\w/-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*", masked) if m.group(0) not in known]
    for block in blocks:
        if block.lang in ("bash", "sh", "shell", "console"):
            for number, line in shell_lines(block):  # flags in a command line: the edge-distill part only
                for argv in commands(line):
                    unknown += [f"{_rel(path)}:{number}: {t}" for t in _flags(argv) if t not in known]
    return unknown


def _flags(argv: list[str]) -> list[str]:
    return [t.split("=")[0] for t in argv if t.startswith("--")]


def test_every_flag_named_in_the_docs_exists():
    known = known_flags() | FOREIGN_FLAGS
    unknown = [line for path in doc_files() for line in unknown_flags(path, known)]
    assert not unknown, "flags the CLI does not have:\n" + "\n".join(unknown)


def test_the_flag_scan_finds_a_stale_flag_and_leaves_other_programs_alone(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("Use `--teacher-views K` or --old-flag here, and `pip install --no-cache-dir x`.\n\n"
                   "```bash\npip download --pre x\nedge-distill build --profile rpi4 \\\n    --gone 3\n```\n")
    assert unknown_flags(doc, known_flags()) == [f"{doc}:1: --old-flag", f"{doc}:5: --gone"]


def _is_foreign(span: str) -> bool:
    """A code span that is another program's command line (pip ..., torchrun ..., python benchmarks/x.py ...), not an
    edge-distill command and not a bare flag such as `--teacher-views K`."""
    words = span.split()
    return len(words) > 1 and not words[0].startswith("-") and words[0] != "edge-distill" and not commands(span)


# ---------------------------------------------------------------------------------------------------- code blocks


def _python_blocks(slow: bool):
    """Per file: its quick blocks (default suite), or all its blocks in order where one is slow (-m slow)."""
    for path in doc_files():
        blocks = [b for b in split_doc(path)[0] if b.lang == "python"]
        has_slow = any("slow" in b.tags for b in blocks)
        chosen = blocks if slow and has_slow else [b for b in blocks if "slow" not in b.tags] if not slow else []
        if chosen:
            yield pytest.param(chosen, id=str(path.relative_to(ROOT)))


def _run_python(blocks: list[Block], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        # Each block goes into a file of its own, its lines at their line numbers in the markdown file: a traceback
        # then points at the doc's line, and code that reads its own source (torch.jit.script) finds it.
        source = [""] * block.lines[-1][0]
        for number, text in block.lines:
            source[number - 1] = text
        script = tmp_path / f"{block.path.stem}-line{block.line}.py"
        script.write_text("\n".join(source) + "\n")
        try:
            exec(compile(script.read_text(), str(script), "exec"), namespace)
        except Exception as exc:  # name the block, not this test's line
            raise AssertionError(f"{block.where}: the ```python block fails: {type(exc).__name__}: {exc}") from exc


@pytest.mark.parametrize("blocks", list(_python_blocks(slow=False)))
def test_python_blocks_run(blocks, tmp_path, monkeypatch):
    _run_python(blocks, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("blocks", list(_python_blocks(slow=True)))
def test_slow_python_blocks_run(blocks, tmp_path, monkeypatch):
    _run_python(blocks, tmp_path, monkeypatch)


def _run_blocks(slow: bool):
    for path in doc_files():
        for block in split_doc(path)[0]:
            if block.lang == "bash" and "run" in block.tags and ("slow" in block.tags) == slow:
                yield pytest.param(block, id=block.where)


def _run_shell(block: Block, cwd: Path, timeout: float) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for number, line in shell_lines(block):
        argvs = commands(line)
        assert argvs, f"{_rel(block.path)}:{number}: a ```bash run block holds only edge-distill commands"
        for argv in argvs:
            done = subprocess.run([sys.executable, "-m", "edge_distill", *argv], cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=timeout)
            assert done.returncode == 0, (f"{_rel(block.path)}:{number}: edge-distill {shlex.join(argv)} exited "
                                          f"{done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def test_there_are_runnable_blocks():
    assert list(_run_blocks(slow=False)), "README.md should show at least one ```bash run block (cheap commands)"


@pytest.mark.parametrize("block", list(_run_blocks(slow=False)))
def test_cheap_shell_blocks_run(block, tmp_path):
    _run_shell(block, tmp_path, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("block", list(_run_blocks(slow=True)))
def test_slow_shell_blocks_run(block, tmp_path):
    _run_shell(block, tmp_path, timeout=1800)


# ---------------------------------------------------------------------------------------------------- links, size


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(path: Path) -> set[str]:
    _, prose = split_doc(path)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose, re.M)}


def _links(path: Path):
    _, prose = split_doc(path)
    for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", prose):
        yield prose.count("\n", 0, m.start()) + 1, m.group(1)


def broken_links(path: Path) -> list[str]:
    broken = []
    for number, target in _links(path):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: nothing to check offline
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        where = f"{_rel(path)}:{number}: {target}"
        if not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{where} (no heading #{anchor} in {dest.name})")
    return broken


def test_links_resolve():
    broken = [line for path in doc_files() for line in broken_links(path)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "b.md").write_text("# Reading `report.json`, step by step\n")
    doc = tmp_path / "a.md"
    doc.write_text("[ok](b.md#reading-reportjson-step-by-step) [gone](c.md) [bad](b.md#nope) [web](https://x.org/y)\n")
    assert broken_links(doc) == [f"{doc}:1: c.md (no such file)", f"{doc}:1: b.md#nope (no heading #nope in b.md)"]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in _links(README) if not re.match(r"[a-z]+:", t)}
    orphans = [_rel(p) for p in doc_files()[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages nobody can find from README.md: {orphans}"


def test_the_readme_keeps_the_two_commands():
    # CI runs the README's test command on a fresh clone: both stay as they are, each a bash block of its own
    blocks = [b.lines[0][1].strip() for b in split_doc(README)[0] if b.lang == "bash" and len(b.lines) == 1]
    assert "make demo" in blocks and "make test" in blocks, blocks
    targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M)
    assert {"demo", "test"} <= set(targets), targets


def test_the_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/"


# ---------------------------------------------------------------------------------------------------- dependencies


def _requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for extra in project.get("optional-dependencies", {}).values() for r in extra)]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, 1)[0]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_direct_requirement_is_pinned_to_the_tested_version():
    # a lower bound (scikit-learn>=1.3) lets `pip install edge-distill` pull a release no test ran with
    from packaging.requirements import Requirement
    from packaging.version import Version

    wrong = []
    for text in _requirements():
        req = Requirement(text)
        pins = [s for s in req.specifier if s.operator == "=="]
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{text!r} is not installed here, so no test ran with it (make install)")
            continue
        if len(pins) != 1 or len(req.specifier) != 1:
            wrong.append(f"{text!r} is not an exact pin (the tests run with {installed})")
        elif Version(installed) not in req.specifier:  # 2.13.0+cpu satisfies ==2.13.0: a local build of that release
            wrong.append(f"{text!r} but the tests run with {installed}")
    assert not wrong, "pyproject.toml (see docs/dependencies.md):\n" + "\n".join(wrong)


def _closure() -> dict[str, str]:
    """Every installed distribution edge-distill's dependencies (with the test and text extras) reach, by name."""
    seen: dict[str, str] = {}
    todo = [_name(r) for r in _requirements()]
    while todo:
        name = _canon(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # an optional or platform-only dependency not installed here
            continue
        seen[name] = dist.version
        for req in dist.requires or ():
            if "extra ==" not in req:  # extras of a dependency are not pulled by a plain install
                todo.append(_name(req))
    return seen


def test_the_constraints_file_holds_the_tested_version_of_every_dependency():
    listed = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            listed[_canon(name)] = version
    closure = _closure()
    assert len(closure) > 30, closure  # torch, tensorflow, onnx2tf ... : an empty walk would prove nothing
    wrong = [f"{n}: installed {v}, constraints {listed.get(n, 'missing')}"
             for n, v in sorted(closure.items()) if listed.get(n) != v]
    assert not wrong, (f"{CONSTRAINTS.relative_to(ROOT)} is not what the tests run with (regenerate it as "
                       "docs/dependencies.md says):\n" + "\n".join(wrong))


if __name__ == "__main__":
    # `python tests/test_docs.py --write-constraints`: rewrite tests/constraints.txt from this environment, after a
    # dependency changed and the tests passed with it
    if sys.argv[1:] != ["--write-constraints"]:
        sys.exit("usage: python tests/test_docs.py --write-constraints")
    pins = "".join(f"{name}=={version}\n" for name, version in sorted(_closure().items()))
    CONSTRAINTS.write_text(
        "# What the tests ran with: every package edge-distill and its extras pull, at its installed version.\n"
        "# Made by `python tests/test_docs.py --write-constraints`; checked by tests/test_docs.py.\n"
        "# pip install -e '.[text]' -c tests/constraints.txt  (torch's +cpu build: from PyTorch's CPU index)\n" + pins)
    print(f"wrote {CONSTRAINTS} ({pins.count(chr(10))} packages)")
