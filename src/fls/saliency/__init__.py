"""The saliency study (Table 4): how well a model's maps match human gaze on Atari-HEAD.

- atari_head: the dataset on disk (both layouts), trials streamed from their archives;
- gaze: a trial played through the training preprocessing, with the gaze behind each stack;
- metrics: NSS, KL divergence and shuffled AUC, and the model-free baseline maps;
- scoring: a trained cell scored on the trials, cached per frame (src/saliency.py);
- posthoc: the post-hoc maps (Jacobian, Integrated Gradients, Grad-CAM, Greydanus);
- sanity: do the maps depend on the weights (Adebayo et al.'s parameter randomisation);
- fidelity: does the policy use what they highlight (deletion and insertion curves).
Settings: conf/saliency/ (default: docs/protocol.md#saliency-metrics; paper: the authors').
"""
