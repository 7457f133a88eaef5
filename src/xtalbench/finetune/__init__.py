"""Fine-tune a pretrained model on each split fold: ensembles, conformal intervals, learning curves.

`xtalbench finetune <dataset>` (params `finetune`). Offline default: CHGNet 0.3.0's frozen
backbone (its pooled crystal features) with an ensemble of new MLP readout heads that learn the
correction to CHGNet's zero-shot formation energy, early-stopped on half of each fold's val role;
split-conformal intervals are calibrated on the other half.
"""
