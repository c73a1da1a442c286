"""Learning on top of the agent: pretraining and run directories, policy extraction,
fine-tuning (the learner, the acting policy, the loop in the twin), comparisons."""
