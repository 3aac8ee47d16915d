# Python helpers of meta-iot-gateway, importable from its recipes as iotgw.* (addpylib in
# conf/layer.conf) and from the layer's tests.
from . import source  # noqa: F401  (iotgw.source in inline python)
