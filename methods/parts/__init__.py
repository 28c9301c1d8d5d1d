"""Building blocks the methods share: banks, queues, losses, neighbour graphs, k-means, top-M."""
