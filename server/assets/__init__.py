"""The Remote Asset API's logic (Fetch and Push), without the gRPC layer.

Start with fetcher.py (what FetchBlob/FetchDirectory do, in order) and pusher.py;
assembly.py shows how the parts fit. docs/ASSETS.md is the user-facing story.
"""
