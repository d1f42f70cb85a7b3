"""docs/embedding.md: its Python blocks run, in order, as one program.

The program runs on the tiny ONNX model (diam_mean 17, as the bundled model's) in place of the
bundled model: what is checked is that the documented calls work as written and print what the
page says; the bundled model's accuracy is measured in benchmarks/.
"""

import re

from helpers import ROOT, make_tiny_onnx

DOC = ROOT / "docs" / "embedding.md"
BUNDLED = 'Segmenter("nuclei_3d", device="auto")'
#: the tiny model runs the page's stack in a fraction of a second: the cancel comes at once
TIMER, TIMER_NOW = "threading.Timer(0.2, cancel.set)", "threading.Timer(0.0, cancel.set)"


def test_embedding_examples_run(capsys, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 5
    program = "\n".join(blocks)
    assert program.count(BUNDLED) == 1, "the page no longer makes its Segmenter this way"
    assert program.count(TIMER) == 1, "the page no longer cancels this way"
    tiny = make_tiny_onnx(tmp_path / "tiny.onnx", diam_mean=17.0)
    program = program.replace(BUNDLED, f'Segmenter({str(tiny)!r}, device="auto")')
    program = program.replace(TIMER, TIMER_NOW)
    namespace: dict = {}
    exec(compile(program, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "cancelled; the segmenter is still ready" in out
    assert "stack1.tif done" in out and "broken.tif failed" in out
    assert "YX:" in out and "diameter:" in out
