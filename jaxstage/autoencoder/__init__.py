"""Training an Oobleck autoencoder (issue 18): the reconstruction losses so far."""
