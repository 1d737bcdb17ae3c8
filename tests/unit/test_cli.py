"""The command line: one module per command, each small enough to read."""

import ast
import inspect

from auditwatch import cli
from auditwatch.cli.common import UsageError, make_settings


def test_every_command_registers_its_parser_and_no_cli_function_is_over_80_lines():
    parser = cli.build_parser()
    names = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert names == {
        "scan",
        "hunt",
        "crds",
        "chart",
        "run",
        "demo",
        "cluster",
        "import-escu",
        "import-sigma",
        "import-falco",
        "lint",
    }
    for module in cli.COMMANDS:
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 80, f"{module.__name__}.{node.name}"


def test_settings_options_set_their_fields_by_name_and_errors_name_the_option():
    args = cli.build_parser().parse_args(["run", "--sources", "file,webhook", "--allow-path", "/a", "--write-qps", "5"])
    settings = make_settings(args)
    assert settings.source_kinds == ("file", "webhook") and settings.allow_paths == ("/a",) and settings.write_qps == 5
    bad = cli.build_parser().parse_args(["lint", "x.yaml", "--sources", "file,tape"])
    try:
        make_settings(bad)
    except UsageError as exc:
        assert str(exc).startswith("--sources: ")
    else:
        raise AssertionError("a bad source kind was accepted")
