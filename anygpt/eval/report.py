"""Placeholder replaced below."""
def flat_metrics(results):
    out = {}
    for task, r in results.items():
        for k, v in r["metrics"].items():
            out[f"{task}.{k}"] = v
    return out
