"""Server and agent are typed Python 3: mypy must accept both packages."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("dist,package", [("shoal-server", "shoal_server"), ("shoal-agent", "shoal_agent")])
def test_mypy_clean(dist, package, tmp_path):
    out = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--cache-dir", str(tmp_path),
                          package], cwd=os.path.join(ROOT, dist), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
