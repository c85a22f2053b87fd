"""`kubectl guarded dashboard`: a web page on localhost that reads and acts as the user's own kubeconfig identity.

Every read and every button goes through the plugin's own code (`guarded.cli`), so RBAC, the admission
rules and their refusals are exactly those of `kubectl guarded`. The layers:

  model.py   pure: the JSON the page shows, built from the plugin's pure views (no I/O)
  chart.py   the Prometheus chart per version (queries like the operator's, a plotly figure)
  actions.py the buttons: the plugin's commands run with the page's arguments, output captured
  guard.py   who may talk to the server: a secret token, Host and Origin checks (docs/dashboard.md)
  server.py  aiohttp: routes, static files, the blocking API calls in worker threads
"""
