"""FedMap on Flower."""
