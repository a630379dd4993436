"""The cluster: several greenfly nodes as one broker on a shared Redis (loaded only when the
configuration has a [cluster] section; a single node never imports this package)."""
