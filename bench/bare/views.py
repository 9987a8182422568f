import asyncio

import httpx
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

CONSTANT = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


async def constant(request):
    return HttpResponse(CONSTANT, content_type="application/json")


async def relay(request, path):
    loop = asyncio.get_running_loop()
    client = _clients.get(loop) or _clients.setdefault(loop, httpx.AsyncClient(timeout=60))
    upstream = await client.send(
        client.build_request(
            request.method,
            f"{settings.UPSTREAM_URL}/v1/{path}",
            content=request.body,
            headers={"Content-Type": request.content_type},
        ),
        stream=True,
    )

    async def body():
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    return StreamingHttpResponse(body(), status=upstream.status_code, content_type=upstream.headers.get("content-type"))
