// Package deploy holds tether's deployment files, and the tests that keep
// them honest: kubernetes/ (plain manifests, kubectl apply -f) checked by
// kubernetes_test.go, and the repository's docker-compose.yml checked by
// compose_test.go. It has no code.
package deploy
