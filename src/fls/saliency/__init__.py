"""Saliency maps and what they are measured with: the parts the two saliency apps
(fls.gaze_scores: Table 4's gaze scores; fls.saliency_checks: the sanity and fidelity
checks), the videos and the analysis share. Nothing here opens a run directory.

- atari_head: the dataset on disk (both layouts), trials streamed from their archives;
- gaze: a trial played through the training preprocessing, with the gaze behind each stack;
- metrics: NSS, KL divergence and shuffled AUC, and the model-free baseline maps;
- posthoc: the post-hoc maps (Jacobian, Integrated Gradients, Grad-CAM, Greydanus);
- sanity: do the maps depend on the weights (Adebayo et al.'s parameter randomisation);
- fidelity: does the policy use what they highlight (deletion and insertion curves);
- ball: is a Breakout map on the ball.
Settings: conf/saliency/ (default: docs/protocol.md#saliency-metrics; paper: the authors').
"""
