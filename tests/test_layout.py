"""The redesign's rules, checked on the source: task specifics stay in tasks/, the build's flags come from
BuildOptions, the pipeline stays a short list of stages, and no function grows past the size one can read."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from edge_distill.cli import _build_parser
from edge_distill.options import BuildOptions, flag_name, option_choices, option_fields

PACKAGE = Path(__file__).resolve().parent.parent / "edge_distill"
TASK_NAMES = ("vision", "text")
# Declarations, not branches: a DataSpec checks its own invariant for token inputs, and a text student family says
# which inputs it takes.  Everything else that depends on the task goes through a tasks.Task.
ALLOWED_TASK_COMPARISONS = {"data/spec.py", "models/text.py"}
MAX_FUNCTION_LINES = 80


def _sources(skip: tuple[str, ...] = ()):
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith(skip):
            yield rel, ast.parse(path.read_text())


def _constants(node: ast.Compare):
    for operand in (node.left, *node.comparators):
        items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else (operand,)
        yield from (item.value for item in items if isinstance(item, ast.Constant))


def test_no_task_branch_outside_tasks():
    found = [f"{rel}:{node.lineno}: {ast.unparse(node)}" for rel, tree in _sources(skip=("tasks/",)) if rel not in ALLOWED_TASK_COMPARISONS
             for node in ast.walk(tree) if isinstance(node, ast.Compare) and any(c in TASK_NAMES for c in _constants(node))]
    assert not found, "task-specific branches belong behind tasks.Task:\n" + "\n".join(found)


def test_every_build_option_is_a_flag_with_its_default_help_and_choices():
    build = next(a for a in _build_parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith(" build"))
    flags = {a.dest: a for a in build._actions if a.dest != "help"}
    assert set(flags) == {f.name for f in option_fields()}
    for f in option_fields():
        action = flags[f.name]
        assert action.option_strings == [f"--{flag_name(f)}"]
        assert action.default == f.default and action.help.startswith(f.metadata["help"])
        assert (tuple(action.choices) if action.choices else None) == option_choices(f)
    assert dataclasses.asdict(BuildOptions()) == {f.name: f.default for f in option_fields()}


def test_the_pipeline_is_the_order_of_stages_and_functions_stay_readable():
    assert len((PACKAGE / "pipeline.py").read_text().splitlines()) <= 200
    long = [f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)" for rel, tree in _sources()
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "split these into named steps:\n" + "\n".join(long)
