"""The distillation machinery FACDModel runs on: feature taps, the adaptive gate, the teacher runner and its check,
checkpoint and resume records, and the distributed helpers. Nothing here imports the study harness or the tools."""
