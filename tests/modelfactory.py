"""Small Cellpose-format networks with random weights, exported to ONNX, for tests.

Widths are narrow (nbase 2-8-16-32-64) so parity tests run in seconds; the architecture and
every code path are the same as for Cellpose's 32-256 network.
"""

from pathlib import Path

TINY_NBASE = [2, 8, 16, 32, 64]


def make_cellpose_net(nbase=TINY_NBASE, seed=0, diam_mean=30.0, diam_labels=None):
    """A cellpose.resnet_torch.CPnet with random weights and BatchNorm statistics (eval mode)."""
    import torch
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(seed)
    net = CPnet(list(nbase), 3, 3, mkldnn=False, diam_mean=diam_mean)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    # make cellprob positive in bright regions so dynamics has something to do
    with torch.no_grad():
        net.output[2].bias[2] += 0.5
    if diam_labels is not None:
        net.diam_labels.data[:] = diam_labels
    return net.eval()


def exported_model(folder: Path, *, name="tiny", seed=0, ortho_seed=None, diam_mean=30.0,
                   diam_labels=None, nbase=TINY_NBASE):
    """Save a Cellpose file (and optional ortho file), export to ONNX; return (onnx, net, ortho_net)."""
    from nucseg_rt_export.onnx_export import export_cellpose

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = make_cellpose_net(nbase, seed, diam_mean, diam_labels)
    src = folder / f"{name}_cp"
    net.save_model(str(src))
    ortho_net, ortho_src = None, None
    if ortho_seed is not None:
        ortho_net = make_cellpose_net(nbase, ortho_seed, diam_mean, diam_labels)
        ortho_src = folder / f"{name}_cp_ortho"
        ortho_net.save_model(str(ortho_src))
    out = folder / f"{name}.onnx"
    export_cellpose(src, out, ortho=ortho_src)
    return out, net, ortho_net


def as_cellpose_runner(net):
    """Wrap a narrow CPnet so Cellpose's run_net (which hard-codes 256 style features) accepts it."""
    import torch

    class Runner(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.nout = inner.nout
            self.mkldnn = False

        @property
        def device(self):
            return next(self.inner.parameters()).device

        def forward(self, x):
            y, style = self.inner(x)[:2]
            return y, torch.nn.functional.pad(style, (0, 256 - style.shape[1]))

    return Runner(net).eval()


def cellpose_model(net, ortho_net=None):
    """A cellpose.models.CellposeModel (CPU) running ``net`` (and ``ortho_net``) of any width."""
    from cellpose import models

    m = models.CellposeModel(gpu=False, pretrained_model=False)
    m.net = as_cellpose_runner(net)
    m.net_ortho = as_cellpose_runner(ortho_net) if ortho_net is not None else None
    m.diam_mean = float(net.diam_mean.item())
    m.diam_labels = float(net.diam_labels.item())
    return m


def cellpose_file_model(path, nbase):
    """A CellposeModel running a Cellpose-format file of width ``nbase`` (Cellpose hard-codes 32-256)."""
    import torch
    from cellpose.resnet_torch import CPnet

    net = CPnet(list(nbase), 3, 3, mkldnn=False)
    net.load_state_dict(torch.load(path, weights_only=True))
    return cellpose_model(net.eval())
