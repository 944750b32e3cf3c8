"""Training edged's own nn4.small2 weights: distillation from dlib and triplet fine-tuning."""
