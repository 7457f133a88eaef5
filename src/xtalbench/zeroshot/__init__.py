"""Zero-shot scoring of pretrained models on real DFT sets they did (seen) or did not (unseen) train on."""
