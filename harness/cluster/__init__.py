"""`--runtime ray`: a study's runs spread over a Ray cluster (docs/CLUSTER.md).

Only `ray_executor` (and what it loads) imports Ray, which is the optional extra `cxrbench[cluster]`;
`settings` is plain, so the command line knows the options without Ray installed.
"""
