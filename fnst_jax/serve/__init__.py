"""Real-time style transfer as an HTTP service: `python serve.py --models runs/`.

Where things happen:
  * `cli.py`: the flags of `python serve.py`; runs the app on uvicorn (SIGTERM drains).
  * `app.py`: the routes (FastAPI): the web page, `POST /v1/stylize`, models, health,
    metrics; JSON errors; the upload limit while the body streams in.
  * `service.py`: `Service`, one request's path: ready? -> queue slot -> decode (thread
    pool) -> batcher -> encode (thread pool) -> bytes and timing headers; the warm-up.
  * `batcher.py`: the bounded queue and the workers (one per device) that own the network
    and batch requests of the same model and size bucket.
  * `models.py`: finding model files in the given paths, names, loading them as stylize
    engines (`fnst_jax.stylize.Stylizer`: what `stylize.py` computes), thumbnails.
  * `images.py`: request bytes -> pixels (limits checked before decoding) -> response
    bytes, all in memory.
  * `metrics.py`: the Prometheus metrics; `errors.py`: `ServiceError` (status + JSON).
  * `static/`: the web page (plain HTML, CSS, JS; nothing loaded from elsewhere).

Needs the `serve` extra (FastAPI, uvicorn, python-multipart, prometheus-client).
"""
