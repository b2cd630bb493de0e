"""Distillation of the pretrained teacher into compact any-band students, and their efficiency."""
