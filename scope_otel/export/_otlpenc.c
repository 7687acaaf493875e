/* Placeholder: the accelerator is being written.  Python code checks for its
 * functions and falls back to pure Python while they are missing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlpenc", NULL, -1, NULL};

PyMODINIT_FUNC
PyInit__otlpenc(void)
{
    return PyModule_Create(&module);
}
