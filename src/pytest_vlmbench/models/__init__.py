"""What is benchmarked: the model catalog, devices and their precisions, weights (local,
hub, derived by llama.cpp's quantiser, generated for tests)."""
