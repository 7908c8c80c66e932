"""Tools around ComfyUI, beside the method in det_core: the HTTP + websocket client and headless runner
(`python -m det_tools.client`), the server launcher (`host`), and MTBench: reading its cases (`mtbench`) and
running them over several servers (`python -m det_tools.bench`). Nothing here is loaded by the ComfyUI nodes."""
