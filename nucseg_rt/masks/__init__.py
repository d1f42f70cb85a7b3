"""From flows to labels: flow following and seeds (``dynamics``; public path
``nucseg_rt.dynamics``), 2D-to-3D stitching (``stitch``), hole filling, size filters and relabelling
(``postprocess``), and the label-to-flow targets used for checks and training (``label_flows``)."""
