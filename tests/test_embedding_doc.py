"""docs/embedding.md: its Python blocks run, in order, as one program (bundled model)."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "embedding.md"


def test_embedding_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "cancelled; the segmenter is still ready" in out
    assert "stack1.tif done" in out and "broken.tif failed" in out
    assert "YX:" in out and "diameter:" in out
