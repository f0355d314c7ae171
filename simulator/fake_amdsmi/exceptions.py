"""amdsmi 7.0.2 exceptions and status codes (amdsmi_exception.py, amdsmi_wrapper.AMDSMI_STATUS_*)."""

from __future__ import annotations

STATUS = {"SUCCESS": 0, "INVAL": 1, "NOT_SUPPORTED": 2, "NOT_YET_IMPLEMENTED": 3, "FAIL_LOAD_MODULE": 4,
          "FAIL_LOAD_SYMBOL": 5, "DRM_ERROR": 6, "API_FAILED": 7, "TIMEOUT": 8, "RETRY": 9, "NO_PERM": 10,
          "INTERRUPT": 11, "IO": 12, "ADDRESS_FAULT": 13, "FILE_ERROR": 14, "OUT_OF_RESOURCES": 15,
          "INTERNAL_EXCEPTION": 16, "INPUT_OUT_OF_BOUNDS": 17, "INIT_ERROR": 18, "REFCOUNT_OVERFLOW": 19,
          "DIRECTORY_NOT_FOUND": 20, "BUSY": 30, "NOT_FOUND": 31, "NOT_INIT": 32, "NO_SLOT": 33,
          "DRIVER_NOT_LOADED": 34, "MORE_DATA": 39, "NO_DATA": 40, "INSUFFICIENT_SIZE": 41, "UNEXPECTED_SIZE": 42,
          "UNEXPECTED_DATA": 43, "FILE_NOT_FOUND": 52, "ARG_PTR_NULL": 53, "AMDGPU_RESTART_ERR": 54,
          "SETTING_UNAVAILABLE": 55, "CORRUPTED_EEPROM": 56, "UNKNOWN_ERROR": 0xFFFFFFFF}
_TEXT = {1: "Invalid parameters", 2: "Feature not supported", 8: "Timeout in API call", 9: "Retry operation",
         10: "Permission Denied", 30: "Device busy", 31: "Device Not found", 32: "Device not initialized",
         34: "Driver not loaded", 43: "Unexpected data", 54: "AMDGPU restart failed, please check dmsg for errors",
         55: "Setting is not available"}
_NAME = {v: k for k, v in STATUS.items()}


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int):
        super().__init__(err_code)
        self.err_code = abs(err_code)
        name = _NAME.get(self.err_code)
        self.err_info = (f"AMDSMI_STATUS_{name} - {_TEXT[self.err_code]}" if name and self.err_code in _TEXT
                         else "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def get_error_code(self) -> int:
        return self.err_code

    def get_error_info(self, detailed: bool = True) -> str:
        return self.err_info if detailed else self.err_info.split(" - ")[0]

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"


class AmdSmiRetryException(AmdSmiLibraryException):
    def __init__(self):
        super().__init__(STATUS["RETRY"])


class AmdSmiTimeoutException(AmdSmiLibraryException):
    def __init__(self):
        super().__init__(STATUS["TIMEOUT"])


class AmdSmiParameterException(AmdSmiException):
    def __init__(self, receivedValue, expectedType, msg=None):  # noqa: N803 - the package's own names
        super().__init__(receivedValue, expectedType, msg)
        self.err_code = None
        self.actualType = type(receivedValue)
        self.expectedType = expectedType
        self.msg = msg

    def __str__(self) -> str:
        return self.msg or f"Invalid parameter:\nActual type: {self.actualType}\nExpected type: {self.expectedType}"
