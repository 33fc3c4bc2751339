"""nsqadmin: the cluster's web console (JSON API, pages, live charts) on Klein."""
