"""fcn-caffe: a Caffe-compatible prototxt generator and runner for Fully Convolutional Networks."""
from setuptools import find_packages, setup

setup(
    name="fcn-caffe",
    version="0.1.0",
    description="Caffe-compatible FCN tooling: prototxt/caffemodel formats, NetSpec, a PyTorch runner "
                "behind the pycaffe API, Caffe solvers, net surgery and the FCN model zoo.",
    packages=find_packages(include=["netspec", "netspec.*", "runner", "runner.*", "solvers", "solvers.*",
                                    "surgery", "surgery.*", "data_layers", "data_layers.*", "fcn", "fcn.*"]),
    package_data={"netspec": ["caffe.proto"]},
    python_requires=">=3.9",
    # torch is installed first by the Makefile at the pinned CPU version; any torch 2.x serves.
    # h5py: Caffe's HDF5 formats; lmdb, plyvel: the Data layer's backends; OpenCV: images decoded and resized exactly as Caffe's
    # cv::imread/cv::resize (PIL's bilinear differs by up to 40 levels); OpenCV 5 has no Caffe importer.
    install_requires=["torch>=2.1", "numpy", "protobuf>=4.21,<8", "pillow", "scipy", "tqdm", "matplotlib",
                      "h5py", "lmdb", "plyvel", "opencv-python-headless<5"],
    extras_require={
        # fcn export (ONNX) and fcn convert (safetensors)
        "export": ["onnx", "safetensors"],
        "test": ["pytest", "onnx", "onnxruntime", "safetensors"],
    },
    entry_points={"console_scripts": [
        "fcn = fcn.cli:command",
        "caffe = fcn.tools.caffe:command",
        # Caffe's tools under Caffe's names and arguments
        "convert_imageset = fcn.tools.convert_imageset:main",
        "compute_image_mean = fcn.tools.compute_image_mean:main",
        "upgrade_net_proto_text = fcn.tools.upgrade_net_proto_text:main",
        "upgrade_net_proto_binary = fcn.tools.upgrade_net_proto_binary:main",
        "upgrade_solver_proto_text = fcn.tools.upgrade_solver_proto_text:main",
    ]},
)
