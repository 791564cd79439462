"""p2p.evaluation: score checkpoints and exported models (metrics, segmentation score, HTML report).

Scoring an ``.onnx`` or ``.engine`` needs only the runtime's dependencies; torch is
imported when a checkpoint is scored or ``--segmenter`` is asked for.
"""
