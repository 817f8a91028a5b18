"""Inference on new faces: the Predictor, face detection, media reading, submissions, plots."""
