//! Logistic-regression probes shared by every benchmark (being written).
