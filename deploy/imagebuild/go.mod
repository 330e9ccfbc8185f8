module github.com/rallyhq/rally/deploy/imagebuild

go 1.26.8
