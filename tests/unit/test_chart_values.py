"""The Helm chart's generated files and its values.yaml agree with the models they come from."""

import subprocess
import sys
from pathlib import Path

import yaml

from auditwatch.api.chart import ChartValues

CHART = Path(__file__).resolve().parents[2] / "charts/auditwatch"


def test_the_charts_crds_and_schema_are_generated_ones():
    check = [sys.executable, "-m", "auditwatch", "chart", "--check", str(CHART)]
    assert subprocess.run(check, check=False).returncode == 0


def test_values_yaml_holds_the_models_defaults():
    assert ChartValues.model_validate(yaml.safe_load((CHART / "values.yaml").read_text())) == ChartValues()


def test_a_stale_schema_is_named(tmp_path):
    (tmp_path / "values.schema.json").write_text("{}")
    check = [sys.executable, "-m", "auditwatch", "chart", "--check", str(tmp_path)]
    proc = subprocess.run(check, capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "values.schema.json differs; run `auditwatch chart`" in proc.stderr
