"""Clustering used by distillation (DREAM's representative matching): jittable, vmappable k-means."""
from ddjax.cluster.kmeans import (KMeansResult, check_num_clusters, kmeans, kmeans_plusplus, nearest_indices,
                                  squared_distances_to)

__all__ = ["KMeansResult", "check_num_clusters", "kmeans", "kmeans_plusplus", "nearest_indices",
           "squared_distances_to"]
