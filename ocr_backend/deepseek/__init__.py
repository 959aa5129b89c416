"""DeepSeek-OCR: the Modal app, its client, the vLLM runner, output cleaning, pricing and deploy.

The engines that use it are ``ocr_backend.engines.deepseek`` and ``deepseek_local``. Nothing here is
imported by this file: ``modal_app`` pulls in modal, and the rest is loaded only when a DeepSeek
engine is used.
"""
