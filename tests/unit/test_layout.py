"""The house's layout, as issue 24 set it: the folders follow the data flow, the training stages do not import
each other (what two share lives below them), nothing but the demo imports the demo, no module imports itself
round about, and PPO's loop stays short. Read from the source (every import, also those inside functions)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "instructrl"
STAGES = ("sft", "reward", "ppo")
BELOW_THE_STAGES = {"config", "datasets", "errors", "models", "training"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every instructrl module -> the instructrl modules it imports (a name imported from a package that is
    a module of its own counts as that module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("instructrl")
            ):
                assert node.module is not None
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[name].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("instructrl")}
        graph[name] &= modules.keys()
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_imports_inside_functions_and_from_packages():
    graph = import_graph()
    # a lazy import inside a function (run_pipeline's `resolve_model`), and `from instructrl.demo import base`
    assert "instructrl.models.loading" in graph["instructrl.pipeline.run"]
    assert "instructrl.demo.base" in graph["instructrl.demo.pipeline"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_round_about():
    assert cycles(import_graph()) == []


def test_nothing_outside_the_demo_imports_the_demo():
    wrong = {
        (m, t)
        for m, targets in import_graph().items()
        for t in targets
        if package_of(t) == "demo" and package_of(m) != "demo"
    }
    assert not wrong


def test_the_training_stages_import_only_what_lies_below_them():
    """SFT, the reward model and PPO share what lives in config, datasets, errors, models and training; none
    imports another stage, the pipeline that composes them, the evaluation or the labeling app."""
    for m, targets in import_graph().items():
        if package_of(m) in STAGES:
            others = {package_of(t) for t in targets} - {package_of(m)}
            assert others <= BELOW_THE_STAGES, (m, others - BELOW_THE_STAGES)


def test_ppo_train_reads_as_the_papers_steps_in_at_most_300_lines():
    assert len((PACKAGE / "ppo" / "train.py").read_text(encoding="utf-8").splitlines()) <= 300
